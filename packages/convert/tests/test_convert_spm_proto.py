"""The SentencePiece model reader agrees with SentencePiece itself on a real model, and refuses garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
from sentencepiece import SentencePieceProcessor

from bignlp_convert.spm_proto import CONTROL, UNIGRAM, UNKNOWN, parse_model

MODEL = Path(__file__).resolve().parents[3] / "tests" / "data" / "spm" / "multi_unigram_8000.model"


def test_pieces_and_specs_equal_sentencepiece():
    proto = parse_model(MODEL.read_bytes())
    sp = SentencePieceProcessor(model_file=str(MODEL))
    assert len(proto.pieces) == sp.get_piece_size() == 8000
    for i, p in enumerate(proto.pieces):
        assert p.piece == sp.id_to_piece(i)
        assert p.score == pytest.approx(sp.get_score(i), abs=0)
        assert (p.type == CONTROL) == sp.is_control(i) and (p.type == UNKNOWN) == sp.is_unknown(i)
    assert proto.trainer_spec.model_type == UNIGRAM
    assert proto.trainer_spec.unk_id == sp.unk_id()
    assert proto.normalizer_spec.precompiled_charsmap  # nmt_nfkc's compiled rules
    assert proto.normalizer_spec.add_dummy_prefix and proto.normalizer_spec.remove_extra_whitespaces


@pytest.mark.parametrize("data", [b"\x0a\xff", b"\x0a\x05ab", b"\x0f"])
def test_malformed_bytes_are_a_value_error(data):
    with pytest.raises(ValueError):
        parse_model(data)
