"""`python -m churn.tools.tune`: the command of churn.tools.tune.cli."""

from churn.tools.tune.cli import main

if __name__ == "__main__":
    main()
