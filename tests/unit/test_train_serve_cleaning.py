"""No train/serve skew: the same raw rows, cleaned the way prepare cleans them for training and the way
scoring (churn.tools.predict) cleans them, give the same frame and the same features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.config import DataParams, FeaturizeParams
from churn.core.features import build_preprocessor, transform
from churn.core.schema import clean_features, clean_table
from churn.storage.csv_reader import read_raw
from churn.tools.predict import read_table

ROWS = """customer_id,age,tenure,monthly_charges,gender,contract_type,churn
001,34,12,70.5,female,month-to-month,1
002, 51 ,NA,,male , one-year,0
003,,3,99.9,,two-year,0
004,29,null,15,female,month-to-month,1
005,62,48, 42.25 ,male,NULL,0
006,45,7,80,female,month-to-month,1
"""


def test_training_and_scoring_clean_raw_rows_alike(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(ROWS)
    data = DataParams(
        raw_path=str(path),
        id_columns=("customer_id",),
        numerical=("age", "tenure", "monthly_charges"),
        categorical=("gender", "contract_type"),
        target="churn",
        positive_label=1,
    )
    trained = clean_table(read_raw(path, data), data, str(path))[0][list(data.features)]
    scored = clean_features(read_table(path), data.numerical, data.categorical, str(path)).reset_index(drop=True)
    pd.testing.assert_frame_equal(trained, scored)
    assert trained["tenure"].isna().sum() == 2 and trained["gender"].isna().sum() == 1
    assert trained.loc[1, "gender"] == "male" and trained.loc[1, "contract_type"] == "one-year"

    # Training reads its split back from parquet (a missing category becomes NaN, scoring passes None):
    # the fitted preprocessor maps both to the same features.
    parquet = tmp_path / "train.parquet"
    trained.assign(churn=[1, 0, 0, 1, 0, 1]).to_parquet(parquet, index=False)
    from_parquet = pd.read_parquet(parquet)
    settings = FeaturizeParams(numeric_impute="median", scale=True, min_category_frequency=1)
    preprocessor = build_preprocessor(data, settings).fit(from_parquet)
    np.testing.assert_array_equal(
        transform(preprocessor, from_parquet).to_numpy(), transform(preprocessor, scored).to_numpy()
    )
