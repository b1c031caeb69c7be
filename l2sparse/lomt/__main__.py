"""``python -m l2sparse.lomt``: see [`l2sparse.lomt.cli`][l2sparse.lomt.cli]."""

from __future__ import annotations

from l2sparse.lomt.cli import main

if __name__ == "__main__":
    main()
