"""The `dpo` command line: one thin module per subcommand."""
