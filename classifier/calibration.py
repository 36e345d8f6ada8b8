"""Temperature scaling: one scalar fitted on the validation split so confidences mean what they say.

Works on logits; for the published binary network (one sigmoid unit) a logit z becomes the
two-column logits [0, z], whose softmax is exactly [1 - sigmoid(z), sigmoid(z)].
"""

import numpy as np


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logits_from_probabilities(probabilities):
    """Logits (up to a per-row constant, which softmax ignores) of (N, C) probabilities."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0))


def sigmoid_to_logits(p):
    p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), 1e-12, 1 - 1e-12)
    z = np.log(p) - np.log1p(-p)
    return np.stack([np.zeros_like(z), z], axis=1)


def negative_log_likelihood(logits, y_true, temperature, weights=None):
    """The mean (or ``weights``-weighted mean) negative log-likelihood of the true classes."""
    probabilities = softmax(logits, temperature)
    picked = probabilities[np.arange(len(probabilities)), np.asarray(y_true, int)]
    return float(-np.average(np.log(np.clip(picked, 1e-12, 1.0)), weights=weights))


def fit_temperature(logits, y_true, low=0.05, high=20.0, weights=None):
    """The temperature minimising validation NLL (golden-section search on log T), each row
    weighing ``weights`` where given."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) == 0:
        return 1.0

    def nll(log_temperature):
        return negative_log_likelihood(logits, y_true, np.exp(log_temperature), weights)

    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2))
