"""Recording real simulator episodes as datasets (scripted or random behaviour policies)."""
