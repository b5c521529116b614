"""`python -m fewlabels.models`: the README's models table."""
from fewlabels.models import markdown_table

print(markdown_table(), end="")
