"""How loose a share counted in few cells is: the 95% ranges the differential and the review
figures print beside a percentage. Plain arithmetic, no database (the standard library has no
binomial quantiles, and SciPy is not worth a dependency for two functions)."""

import math

_Z_95 = 1.959963984540054


def wilson_interval(count, total, z=_Z_95):
    """95% Wilson score interval of the share count/total, in percent (0, 0 for no cells).

    Chosen over the normal approximation, which gives impossible ranges such as 0-0% for a type
    seen in none of 20 cells, and close to Rumke's exact binomial limits that labs quote for
    manual differentials (5 of 100: 2.2-11.2% against 1.6-11.3%).
    """
    if not total:
        return 0.0, 0.0
    share = count / total
    spread = z * z / total
    centre = (share + spread / 2) / (1 + spread)
    half_width = z / (1 + spread) * math.sqrt(share * (1 - share) / total + spread / (4 * total))
    return round(100 * max(0.0, centre - half_width), 1), round(100 * min(1.0, centre + half_width), 1)


def _regularized_incomplete_beta(x, a, b):
    """I_x(a, b), the Beta(a, b) distribution's CDF at x, by its continued fraction (modified
    Lentz), on the side of x where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _regularized_incomplete_beta(1.0 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                     + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * fraction


def _beta_quantile(q, a, b):
    """The x at which Beta(a, b)'s CDF reaches q (bisection: I_x rises with x)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if _regularized_incomplete_beta(middle, a, b) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def exact_binomial_interval(count, total, confidence=0.95):
    """The 95% range of the share count/total, in percent, by the exact binomial (Clopper-Pearson)
    limits behind Rumke's tables, which hematology quotes for a manual differential (CLSI H20):
    never narrower than its confidence promises, as an approximation is for few cells (1 of 1:
    2.5-100%, where Wilson's score interval gives 20.7-100%). Rounded outward to a tenth (0, 0 for
    no cells)."""
    if not total:
        return 0.0, 0.0
    tail = (1 - confidence) / 2
    low = 0.0 if count == 0 else _beta_quantile(tail, count, total - count + 1)
    high = 1.0 if count == total else _beta_quantile(1 - tail, count + 1, total - count)
    return math.floor(1000 * low + 1e-9) / 10, math.ceil(1000 * high - 1e-9) / 10
