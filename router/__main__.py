from router.cli.main import app

app()
