"""``python -m corl`` runs the CLI (used by tests that need a real process to signal)."""

from corl.cli import main

if __name__ == "__main__":
    main()
