"""On-disk formats: DSRL HDF5 (read/write), D4RL HDF5 (read), Minari (export/import)."""
