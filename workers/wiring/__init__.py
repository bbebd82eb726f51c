"""Building adapters from the settings: the only place channels and stores meet `Settings`."""
