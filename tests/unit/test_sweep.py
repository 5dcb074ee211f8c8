from churn.tools.sweep import family_overrides


def test_family_grid_becomes_one_override_per_key_with_the_store_stamped():
    args = family_overrides("random_forest", {"n_estimators": [100, 200], "max_depth": [10, None]}, "sqlite:///x")
    assert args == [
        "-S",
        "model.type=random_forest",
        "-S",
        "mlflow.tracking_uri=sqlite:///x",
        "-S",
        "model.random_forest.n_estimators=100,200",
        "-S",
        "model.random_forest.max_depth=10,null",
    ]


def test_logistic_regression_keys_sit_directly_under_model():
    args = family_overrides("logistic_regression", {"C": [0.01, 1.5]}, "u")
    assert "model.C=0.01,1.5" in args


def test_a_queue_start_left_waiting_on_a_stuck_worker_is_ended_with_its_workers():
    """What run_queue does when a DVC queue worker never exits: the starter and its children are stopped."""
    import subprocess
    import time

    import psutil

    from churn.tools.sweep import _end_stuck_workers

    starter = subprocess.Popen(["sh", "-c", "sleep 600 & wait"])  # a starter waiting on its worker
    deadline = time.monotonic() + 10
    while not psutil.Process(starter.pid).children():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = psutil.Process(starter.pid).children()[0]
    _end_stuck_workers(starter)
    assert starter.poll() is not None
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
