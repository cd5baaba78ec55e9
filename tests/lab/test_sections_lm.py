"""Which experiments the exploratory data-settings section pools."""
from lab.report.sections_lm import first_per_domain


def test_a_second_single_domain_experiment_on_a_covered_domain_is_left_out():
    drama, action, confirm_drama = ["single-drama runs"], ["single-action runs"], ["confirm-single runs"]
    kept = first_per_domain([(drama, "Drama"), (action, "Action"), (confirm_drama, "Drama")])
    assert kept == [(drama, "Drama"), (action, "Action")]
