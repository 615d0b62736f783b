"""The few fields of a SentencePiece ``.model`` file (a ``ModelProto``) that exporting it needs.

``sentencepiece`` ships generated protobuf code that only loads with a protobuf runtime at least as new
as the one that generated it, and other packages pin protobuf below that (tritonclient's gRPC
client does). The fields read here are plain protobuf wire format, so they are decoded directly:
no protobuf runtime, no version coupling. Field numbers are those of sentencepiece_model.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece.Type
UNIGRAM = 1  # TrainerSpec.ModelType


@dataclass
class Piece:
    piece: str = ""
    score: float = 0.0
    type: int = NORMAL


@dataclass
class TrainerSpec:
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0


@dataclass
class NormalizerSpec:
    name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


@dataclass
class ModelProto:
    pieces: list[Piece] = field(default_factory=list)
    trainer_spec: TrainerSpec = field(default_factory=TrainerSpec)
    normalizer_spec: NormalizerSpec = field(default_factory=NormalizerSpec)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(data: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: ints for varints, bytes for the rest."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_model(data: bytes) -> ModelProto:
    """The pieces, trainer spec and normalizer spec of a serialised ``ModelProto``; ValueError if malformed."""
    model = ModelProto()
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            piece = Piece()
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    piece.piece = v.decode("utf-8")
                elif n == 2 and w == 5:
                    piece.score = struct.unpack("<f", v)[0]
                elif n == 3 and w == 0:
                    piece.type = v
            model.pieces.append(piece)
        elif number == 2 and wire == 2:
            for n, w, v in _fields(value):
                if n == 3 and w == 0:
                    model.trainer_spec.model_type = v
                elif n == 35 and w == 0:
                    model.trainer_spec.byte_fallback = bool(v)
                elif n == 40 and w == 0:
                    model.trainer_spec.unk_id = _int32(v)
        elif number == 3 and wire == 2:
            spec = model.normalizer_spec
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    spec.name = v.decode("utf-8")
                elif n == 2 and w == 2:
                    spec.precompiled_charsmap = bytes(v)
                elif n == 3 and w == 0:
                    spec.add_dummy_prefix = bool(v)
                elif n == 4 and w == 0:
                    spec.remove_extra_whitespaces = bool(v)
    return model
