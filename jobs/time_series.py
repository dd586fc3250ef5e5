"""Time series forecasting: next-step forecast of a synthetic daily series.

Data: four years of daily values built by this script like the TensorFlow course's
helpers: baseline + linear trend + a yearly seasonal pattern + Gaussian noise
(seeded, so every run sees the same series; nothing is downloaded). The first
``--split-time`` steps train the model, the rest validate it.

Model: a window of ``--window-size`` past values -> the next value, predicted as
the window's mean plus a correction that a network computes from the window
minus its mean: Conv1D -> LSTM -> Dense -> Dense(1) (``--model conv_lstm``, the
default) or Dense -> Dense -> Dense(1) (``--model dense``). Trained with the Huber
loss and Adam (cosine-decayed learning rate) on a windowed ``tf.data`` dataset.

Saves into ``$ORCH_OUTPUT_DIR`` (under orch) or ``--output-dir``:

- ``time_series.h5``: the whole model as one HDF5 file (the TensorFlow Developer
  Certificate exam format; reloads with ``keras.models.load_model``); input shape
  (batch, window_size), output (batch, 1);
- ``saved_model/``: a TensorFlow SavedModel (``model.export``) whose
  ``serving_default`` signature takes a ``window`` float tensor of that shape.

Prints the validation MAE of the model next to that of the naive forecast
(tomorrow = today): ``val_mae=… naive_mae=…``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

try:
    from orchestrator.keras import callbacks, output_dir
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from orchestrator.keras import callbacks, output_dir

NAME = "time_series"


# The series: the helpers of the TensorFlow course, with a seeded generator.
def trend(time, slope=0.0):
    return slope * time


def seasonal_pattern(season_time):
    """An arbitrary yearly shape: a cosine hump, then an exponential decay."""
    import numpy as np

    return np.where(season_time < 0.4, np.cos(season_time * 2 * np.pi), 1 / np.exp(3 * season_time))


def seasonality(time, period, amplitude=1.0, phase=0):
    season_time = ((time + phase) % period) / period
    return amplitude * seasonal_pattern(season_time)


def noise(time, noise_level=1.0, seed=None):
    import numpy as np

    return np.random.default_rng(seed).normal(size=len(time)) * noise_level


def make_series(args: argparse.Namespace):  # -> (steps, series), float32 arrays
    import numpy as np

    steps = np.arange(args.length, dtype="float32")
    series = (args.baseline + trend(steps, args.slope)
              + seasonality(steps, period=365, amplitude=args.amplitude)
              + noise(steps, args.noise_level, seed=args.seed))
    return steps, series.astype("float32")


def windowed_dataset(series, window_size: int, batch_size: int, shuffle_buffer: int = 0,
                     seed: int | None = None):
    """(window of ``window_size`` values, next value) pairs as a batched tf.data dataset."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(series)
    ds = ds.window(window_size + 1, shift=1, drop_remainder=True)
    ds = ds.flat_map(lambda w: w.batch(window_size + 1))
    ds = ds.map(lambda w: (w[:-1], w[-1:]))
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    return ds.batch(batch_size).prefetch(1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--model", choices=("conv_lstm", "dense"), default="conv_lstm")
    p.add_argument("--window-size", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=3e-3,
                   help="initial rate of a cosine decay over the run")
    p.add_argument("--split-time", type=int, default=1000, help="first validation step")
    p.add_argument("--length", type=int, default=4 * 365 + 1, help="series length (days)")
    p.add_argument("--baseline", type=float, default=10.0)
    p.add_argument("--slope", type=float, default=0.05)
    p.add_argument("--amplitude", type=float, default=40.0)
    p.add_argument("--noise-level", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", default=f"models/{NAME}",
                   help="where to save without orch ($ORCH_OUTPUT_DIR wins under orch)")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace, std: float, steps_per_epoch: int):  # -> keras.Model
    """Forecast = window mean + a learned correction computed from the window's shape.

    Working relative to the window's own level keeps the model right when the
    trend carries the validation period above every value seen in training.
    Only built-in layers, so the ``.h5`` file loads without custom objects.
    """
    import keras
    from keras import layers

    w = args.window_size
    inputs = keras.Input(shape=(w,), name="window")
    level = layers.GlobalAveragePooling1D(name="level")(layers.Reshape((w, 1))(inputs))
    x = layers.Subtract(name="centre")([inputs, level])  # (batch, w) - (batch, 1)
    x = layers.Rescaling(1.0 / std, name="scale")(x)
    if args.model == "conv_lstm":
        x = layers.Reshape((w, 1))(x)
        x = layers.Conv1D(32, 5, padding="causal", activation="relu")(x)
        x = layers.LSTM(32)(x)
        x = layers.Dense(16, activation="relu")(x)
    else:
        x = layers.Dense(32, activation="relu")(x)
        x = layers.Dense(16, activation="relu")(x)
    x = layers.Dense(1)(x)
    x = layers.Rescaling(std, name="unscale")(x)
    outputs = layers.Add(name="forecast")([level, x])
    model = keras.Model(inputs, outputs, name=NAME)
    learning_rate = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=args.epochs * steps_per_epoch, alpha=0.1
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.Huber(),
        metrics=["mae"],
    )
    return model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    import keras
    import numpy as np

    keras.utils.set_random_seed(args.seed)
    _, series = make_series(args)
    w = args.window_size
    train_series = series[: args.split_time]
    # Validation windows predict every step from split_time on; they start w steps
    # earlier so the first one sees only the past.
    val_series = series[args.split_time - w:]
    train = windowed_dataset(train_series, w, args.batch_size, shuffle_buffer=1000,
                             seed=args.seed)
    val = windowed_dataset(val_series, w, args.batch_size)
    print(f"data: {len(series)} steps; {len(train_series) - w} train / "
          f"{len(series) - args.split_time} validation windows of {w}")

    steps_per_epoch = math.ceil((len(train_series) - w) / args.batch_size)
    model = build_model(args, float(train_series.std()), steps_per_epoch)
    model.fit(train, validation_data=val, epochs=args.epochs, verbose=2, callbacks=callbacks())

    forecast = model.predict(val, verbose=0)[:, 0]
    actual = series[args.split_time:]
    val_mae = float(np.mean(np.abs(forecast - actual)))
    naive_mae = float(np.mean(np.abs(series[args.split_time - 1:-1] - actual)))

    out = output_dir(args.output_dir)
    model_file = out / f"{NAME}.h5"
    model.save(model_file)
    model.export(str(out / "saved_model"), verbose=False)
    print(f"saved {model_file} and {out / 'saved_model'}")
    print(f"val_mae={val_mae:.4f} naive_mae={naive_mae:.4f} "
          f"({100 * (1 - val_mae / naive_mae):.0f}% better than the naive forecast)")
    print(f"elapsed={time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
