"""``python -m l2sparse.train``: see [`l2sparse.train.cli`][l2sparse.train.cli]."""

from l2sparse.train.cli import main

if __name__ == "__main__":
    main()
