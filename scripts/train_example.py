"""Train a tiny CNN for one epoch on the pipeline's output, with PyTorch or TensorFlow.

    python scripts/train_example.py --framework torch      # after `make run` (the demo)
    python scripts/train_example.py --framework tensorflow --split results/splits/preserved_site3.json --fold 2

It shows the three lines a training script needs (manifest + splits JSON + fold -> loaders); the model is a
placeholder, not a recipe.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def train_torch(train, val, n_classes: int, epochs: int) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, n_classes),
    )  # fmt: skip
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        train.set_epoch(epoch)
        model.train()
        seen, total_loss = 0, 0.0
        for images, labels in train:
            logits = model(images.float() / 255.0)
            loss = loss_fn(logits, labels.long())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seen += len(labels)
            total_loss += loss.item() * len(labels)
        model.eval()
        correct = count = 0
        with torch.no_grad():
            for images, labels in val:
                correct += int((model(images.float() / 255.0).argmax(1) == labels.long()).sum())
                count += len(labels)
        print(f"torch epoch {epoch + 1}: {seen} training tiles, loss {total_loss / max(seen, 1):.3f}, "
              f"validation accuracy {correct / max(count, 1):.3f} on {count} tiles")


def train_tensorflow(train, val, n_classes: int, epochs: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.layers.Rescaling(1 / 255.0),
        tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        tf.keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(n_classes),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(train, validation_data=val, epochs=epochs, verbose=0)
    for epoch in range(epochs):
        print(f"tensorflow epoch {epoch + 1}: loss {history.history['loss'][epoch]:.3f}, "
              f"validation accuracy {history.history['val_accuracy'][epoch]:.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", choices=["torch", "tensorflow"], default="torch")
    parser.add_argument("--manifest", default="results/manifests/all.json")
    parser.add_argument("--split", default="results/splits/kfold3.json")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--labels", default="label")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    ns = parser.parse_args(argv)

    from slidetiles import Dataset, loaders_from_artifacts

    started = time.perf_counter()
    # Both frameworks decode in worker processes (the TensorFlow loader's num_workers is its fast path).
    parallelism = {"num_workers": ns.workers}
    # The three lines a training script needs:
    train, val = loaders_from_artifacts(ns.manifest, ns.split, fold=ns.fold, labels=ns.labels,
                                        framework=ns.framework, batch_size=ns.batch_size, infinite=False,
                                        augment="xyr", seed=0, **parallelism)
    _, classes = Dataset.from_manifest(ns.manifest).labels(ns.labels)
    n_classes = len(classes)
    print(f"{ns.framework}: {n_classes} classes {classes}, fold {ns.fold} of {ns.split}")
    if ns.framework == "torch":
        train_torch(train, val, n_classes, ns.epochs)
    else:
        train_tensorflow(train, val, n_classes, ns.epochs)
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
