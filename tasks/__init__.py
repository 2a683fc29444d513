"""Pipeline stages. Each stage package holds config.py, pure compute modules and a thin task.py."""
