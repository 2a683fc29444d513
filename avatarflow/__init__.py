"""avatarflow: manifest of people and scripts → talking 3D doubles rendered by Blender."""

__version__ = "0.1.0"
