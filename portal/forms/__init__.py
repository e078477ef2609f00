"""FlaskForm classes, one module per views module."""
