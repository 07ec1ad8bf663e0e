from security import create_app

app = create_app()
