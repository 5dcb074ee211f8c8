"""Where the pipeline's files live, relative to the stage's working directory (the repository root).

dvc.yaml declares the same paths; tests/unit/test_dvc_yaml.py checks that the two agree.
"""

from pathlib import Path

PREPARED_TRAIN = Path("data/prepared/train.parquet")
PREPARED_TEST = Path("data/prepared/test.parquet")
DATA_QUALITY = Path("reports/data_quality.json")
FEATURES_TRAIN = Path("data/features/train.parquet")
FEATURES_TEST = Path("data/features/test.parquet")
PREPROCESSOR = Path("models/preprocessor.pkl")
MODEL = Path("models/model.pkl")
CV_METRICS = Path("reports/cv_metrics.json")
METRICS = Path("reports/metrics.json")
SLICES = Path("reports/slices.json")
ROC = Path("reports/plots/roc.json")
PRC = Path("reports/plots/prc.json")
CONFUSION = Path("reports/plots/confusion.csv")
CALIBRATION = Path("reports/plots/calibration.json")
GAINS = Path("reports/plots/gains.json")
REPORT = Path("reports/classification_report.json")
IMPORTANCE = Path("reports/feature_importance.json")
FIG_CONFUSION = Path("reports/figures/confusion_matrix.png")
FIG_IMPORTANCE = Path("reports/figures/feature_importance.png")
FIG_ROC = Path("reports/figures/roc.png")
FIG_PRC = Path("reports/figures/precision_recall.png")
FIG_CALIBRATION = Path("reports/figures/calibration.png")
FIG_GAINS = Path("reports/figures/gains.png")
FIG_LIFT = Path("reports/figures/lift.png")
DECISION = Path("reports/register.json")
MODEL_CARD = Path("reports/model_card.md")

EVALUATE_OUTPUTS = (
    METRICS,
    SLICES,
    ROC,
    PRC,
    CONFUSION,
    CALIBRATION,
    GAINS,
    REPORT,
    IMPORTANCE,
    FIG_CONFUSION,
    FIG_IMPORTANCE,
    FIG_ROC,
    FIG_PRC,
    FIG_CALIBRATION,
    FIG_GAINS,
    FIG_LIFT,
)
