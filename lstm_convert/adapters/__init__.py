"""One module per framework or file format, each a symmetric ``read`` / ``write`` pair."""
