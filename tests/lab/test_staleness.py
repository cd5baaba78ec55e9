"""What makes a lab run stale: the sections its models read."""


def test_a_runs_fingerprint_takes_only_the_sections_its_models_read(tmp_path):
    from lab.experiments import experiment_fingerprint
    from llmrec_core.config import load_params

    def fingerprint_with(*overrides):
        return experiment_fingerprint(load_params("params.yaml", [f"data.root={tmp_path}", *overrides]))

    lm_only = fingerprint_with("eval.models=[llmrec]")
    assert fingerprint_with("eval.models=[llmrec]", "seqhead.hidden=128", "sasrec.lr=0.01") == lm_only
    assert fingerprint_with("eval.models=[llmrec]", "train.lr=0.001") != lm_only
    assert fingerprint_with("eval.models=[llmrec]", "model.temperature=0.1") != lm_only

    pretrained = ("eval.models=[seqhead]", "seqhead.item_vectors=pretrained")
    head = fingerprint_with(*pretrained)
    assert fingerprint_with(*pretrained, "seqhead.hidden=256") != head
    assert fingerprint_with(*pretrained, "train.lr=0.001") == head  # over the pre-trained LM
    assert fingerprint_with(*pretrained, "model.item_max_tokens=16") != head  # which encodes its items
    tuned = ("eval.models=[seqhead]", "seqhead.item_vectors=tuned")
    assert fingerprint_with(*tuned, "train.lr=0.001") != fingerprint_with(*tuned)  # over the LM it fine-tunes

    sasrec = fingerprint_with("eval.models=[sasrec]")
    assert fingerprint_with("eval.models=[sasrec]", "model.temperature=0.1", "train.lr=0.001") == sasrec
    assert fingerprint_with("eval.models=[sasrec]", "train.setting=s2piao") != sasrec  # every model reads the setting
    assert fingerprint_with("eval.models=[sasrec]", "sasrec.lr=0.01") != sasrec



def test_a_code_hash_a_probe_carried_forward_does_not_count_as_current():
    from lab.experiments import _carried_by_probe

    assert not _carried_by_probe({"provenance": {"code_hash": "a"}})
    assert _carried_by_probe({"restamped": {"by": "probe"}})
    assert _carried_by_probe({"restamped": {"by": "fingerprint", "earlier": [{"by": "probe"}]}})  # anywhere in it
    assert not _carried_by_probe({"restamped": {"by": "fingerprint", "earlier": [{"by": "fingerprint"}]}})
