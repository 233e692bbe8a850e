from warmctl.cli.main import cli

cli()
