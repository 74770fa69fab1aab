"""`python -m connectors.sandbox`: the `ledgerbridge sandbox` command without the rest of the CLI."""

if __name__ == "__main__":
    from connectors.sandbox.cli import sandbox_command

    sandbox_command(prog_name="ledgerbridge sandbox")
