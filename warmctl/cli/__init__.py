"""The command line: one module per verb, nothing but argument parsing and rendering."""
