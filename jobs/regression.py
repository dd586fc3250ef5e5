"""Tabular regression: predict a house's price from eight numeric features.

Data: ``--samples`` synthetic houses built by this script (seeded, so every run
sees the same table; nothing is downloaded): size, rooms, age, distance to the
centre, ... and a price that depends on them non-linearly, plus noise. The last
``--val-split`` of the rows validate the model.

Model: Normalization (adapted to the training rows) -> Dense(32, relu) ->
Dense(16, relu) -> Dense(1), trained with the mean squared error and Adam. Small
on purpose: it trains in seconds on a CPU.

Saves into ``$ORCH_OUTPUT_DIR`` (under orch) or ``--output-dir``:

- ``regression.h5``: the whole model as one HDF5 file (the TensorFlow Developer
  Certificate exam format; reloads with ``keras.models.load_model``); input shape
  (batch, 8), output (batch, 1), the price in thousands;
- ``saved_model/``: a TensorFlow SavedModel (``model.export``);

and, with ``--save-as FILE``, the ``.h5`` model once more at FILE (relative to the
working folder: ``orch submit --output mymodel.h5:. jobs/regression.py --
--save-as mymodel.h5`` brings it back to the project's root).

Prints the validation MAE next to that of always predicting the mean price:
``val_mae=… mean_mae=…``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    from orchestrator.keras import callbacks, output_dir
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from orchestrator.keras import callbacks, output_dir

NAME = "regression"
FEATURES = 8


def make_table(samples: int, seed: int):  # -> (x, y), float32 arrays
    """Eight features per house and its price (thousands): size and rooms raise it,
    age and distance lower it, a garden helps in the suburbs only."""
    import numpy as np

    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 250, samples)  # square metres
    rooms = np.round(size / 30 + rng.normal(0, 1, samples)).clip(1, 10)
    age = rng.uniform(0, 100, samples)  # years
    distance = rng.exponential(8, samples)  # km to the centre
    garden = rng.uniform(0, 1, samples) < 0.4
    floor = rng.integers(0, 10, samples)
    school = rng.uniform(0, 10, samples)  # nearby school rating
    noise_feature = rng.normal(0, 1, samples)  # unrelated to the price
    price = (2.2 * size + 15 * rooms - 0.8 * age + 250 * np.exp(-distance / 6)
             + 30 * garden * (distance > 5) + 2 * floor + 6 * school
             + rng.normal(0, 15, samples))
    x = np.stack([size, rooms, age, distance, garden, floor, school, noise_feature], axis=1)
    return x.astype("float32"), price.astype("float32")[:, None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--samples", type=int, default=2000, help="houses to generate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--val-split", type=float, default=0.2, help="held-out fraction")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save-as", default="",
                   help="also save the .h5 model here (relative to the working folder)")
    p.add_argument("--output-dir", default=f"models/{NAME}",
                   help="where to save without orch ($ORCH_OUTPUT_DIR wins under orch)")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace, x_train):  # -> keras.Model
    import keras
    from keras import layers

    norm = layers.Normalization(name="normalize")
    norm.adapt(x_train)
    model = keras.Sequential([keras.Input((FEATURES,), name="features"), norm,
                              layers.Dense(32, activation="relu"),
                              layers.Dense(16, activation="relu"),
                              layers.Dense(1, name="price")], name=NAME)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss=keras.losses.MeanSquaredError(),
                  metrics=["mae"])
    return model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    import keras
    import numpy as np

    keras.utils.set_random_seed(args.seed)
    x, y = make_table(args.samples, args.seed)
    cut = int(len(x) * (1 - args.val_split))
    print(f"data: {len(x)} houses, {FEATURES} features; {cut} train / {len(x) - cut} "
          "validation")
    model = build_model(args, x[:cut])
    model.fit(x[:cut], y[:cut], validation_data=(x[cut:], y[cut:]), epochs=args.epochs,
              batch_size=args.batch_size, verbose=2, callbacks=callbacks())

    val_mae = float(np.mean(np.abs(model.predict(x[cut:], verbose=0) - y[cut:])))
    mean_mae = float(np.mean(np.abs(y[:cut].mean() - y[cut:])))

    out = output_dir(args.output_dir)
    model_file = out / f"{NAME}.h5"
    model.save(model_file)
    model.export(str(out / "saved_model"), verbose=False)
    print(f"saved {model_file} and {out / 'saved_model'}")
    if args.save_as:
        model.save(args.save_as)
        print(f"saved {args.save_as}")
    print(f"val_mae={val_mae:.4f} mean_mae={mean_mae:.4f} "
          f"({100 * (1 - val_mae / mean_mae):.0f}% better than predicting the mean)")
    print(f"elapsed={time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
