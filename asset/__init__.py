"""The finished asset a shopper's viewer loads: the mesh prepared in the glTF frame, and one writer
per file format (``glb``)."""
