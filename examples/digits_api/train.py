"""Train the digits classifier from scikit-learn's bundled data and push it to the registry
as `digits`, pointing `production` at it (a new version each run)."""

import sys

from sklearn.datasets import load_digits
from sklearn.svm import SVC

import headrace.models as models


def main() -> None:
    gamma = float(sys.argv[1]) if len(sys.argv) > 1 else 0.001
    digits = load_digits()
    model = SVC(gamma=gamma, C=10.0).fit(digits.data[:1500], digits.target[:1500])
    accuracy = model.score(digits.data[1500:], digits.target[1500:])
    version = models.push(
        "digits", model, metrics={"accuracy": accuracy}, description=f"SVC gamma={gamma}"
    )
    models.set_alias("digits", "production", version.version)
    print(f"pushed {version.ref} (accuracy {accuracy:.3f}) as digits@production")


if __name__ == "__main__":
    main()
