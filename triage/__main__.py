from triage.router.cli.main import app

app()
