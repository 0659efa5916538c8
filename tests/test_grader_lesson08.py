"""The checks of lesson 8 (learned variances, the bound in bits per dimension), run in this process as
tests/test_grader_lesson07.py runs those of lesson 7: typical wrong answers are rejected (the solution
passing and the exercise reaching its stub are tested for every lesson in tests/test_grader.py)."""

import pytest

from grading_helpers import expect_rejected

KL = '''
def gaussian_kl(mean1, log_var1, mean2, log_var2):
    return {body}
'''


@pytest.mark.parametrize("body", [
    "0.5 * (-1 + log_var1 - log_var2 + torch.exp(log_var2 - log_var1) + (mean1 - mean2) ** 2 * torch.exp(-log_var1))",
    "0.5 * (log_var2 - log_var1 + torch.exp(log_var1 - log_var2) + (mean1 - mean2) ** 2 * torch.exp(-log_var2))",
    "(-1 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2) + (mean1 - mean2) ** 2 * torch.exp(-log_var2))",
])
def test_a_wrong_kl_is_rejected(body):
    expect_rejected("08", "gaussian_kl_is_the_closed_form", KL.format(body=body))


DECODER = '''
def discretized_log_likelihood(x, mean, log_variance):
    half = {half}
    std = torch.exp(0.5 * log_variance)
    upper, lower = (x - mean + half) / std, (x - mean - half) / std
    middle = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12))
    low_edge, high_edge = {low}, {high}
    return torch.where(x < -1 + 1 / 255, low_edge, torch.where(x > 1 - 1 / 255, high_edge, middle))
'''
RIGHT = {"half": "1 / 255", "low": "torch.special.log_ndtr(upper)", "high": "torch.special.log_ndtr(-lower)"}


def test_the_decoder_template_is_right():
    from grading_helpers import definitions
    from lesson_lib.course.checks import load_checks
    namespace = definitions("solutions", "08")
    exec(DECODER.format(**RIGHT), namespace)
    for check in load_checks("08"):
        if "discretized_log_likelihood" in check.uses:
            check.fn(namespace)


@pytest.mark.parametrize("change, check_name", [
    ({"half": "2 / 255"}, "discretized_log_likelihood_is_eq_13"),                        # a bin twice as wide
    ({"low": "middle", "high": "middle"}, "discretized_log_likelihood_is_eq_13"),        # closed edge bins
    ({"low": "torch.log(torch.special.ndtr(upper))",                                     # naive: log 0 in the tail
      "high": "torch.log(1 - torch.special.ndtr(lower))"}, "edge_bins_are_open_and_exact_in_the_tails"),
    ({"low": "torch.log(torch.special.ndtr(upper).clamp(min=1e-12))",                    # a floor in the tail
      "high": "torch.log((1 - torch.special.ndtr(lower)).clamp(min=1e-12))"}, "edge_bins_are_open_and_exact_in_the_tails"),
])
def test_a_wrong_decoder_is_rejected(change, check_name):
    expect_rejected("08", check_name, DECODER.format(**dict(RIGHT, **change)))


@pytest.mark.parametrize("body", [
    "v * log_beta + (1 - v) * log_beta_tilde",                                  # v used as frac
    "(v + 1) / 2 * log_beta_tilde + (1 - v) / 2 * log_beta",                    # the ends swapped
    "torch.log((v + 1) / 2 * log_beta.exp() + (1 - v) / 2 * log_beta_tilde.exp())",  # interpolated in variance
])
def test_a_wrong_learned_variance_is_rejected(body):
    source = f"def learned_log_variance(v, log_beta, log_beta_tilde):\n    return {body}\n"
    expect_rejected("08", "learned_log_variance_is_eq_15", source)


@pytest.mark.parametrize("body", [
    "0.01",                                                                      # sqrt(beta_1), whatever b
    "(1 / 255) / torch.special.ndtri(torch.tensor(1 - 2.0 ** -bits, dtype=torch.float64)).item()",  # one-sided bin
    "(1 / 255) / torch.special.ndtri(torch.tensor((1 + math.exp(-bits)) / 2, dtype=torch.float64)).item()",  # nats
])
def test_a_wrong_decoder_std_is_rejected(body):
    source = f"def decoder_std_for_bits(bits):\n    return {body}\n"
    expect_rejected("08", "decoder_std_for_bits_inverts_the_bin_mass", source)
