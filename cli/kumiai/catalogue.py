"""The business systems a town can run, and the 三層 segment each may live in.

The 20 standardized business systems (標準化法, 2021) all process individual numbers, so they belong in the
マイナンバー利用事務系 segment only. A consortium adds its own local systems in consortium.yaml.
"""

from __future__ import annotations

from enum import StrEnum


class Segment(StrEnum):
    """The three separated network segments of 三層の対策."""

    mynumber = "mynumber"  # マイナンバー利用事務系
    lgwan = "lgwan"  # LGWAN接続系
    internet = "internet"  # インターネット接続系


SEGMENT_LABELS: dict[Segment, str] = {
    Segment.mynumber: "マイナンバー利用事務系",
    Segment.lgwan: "LGWAN接続系",
    Segment.internet: "インターネット接続系",
}

STANDARD_SYSTEMS: tuple[str, ...] = (
    "住民基本台帳",
    "選挙人名簿管理",
    "固定資産税",
    "個人住民税",
    "法人住民税",
    "軽自動車税",
    "国民健康保険",
    "国民年金",
    "障害者福祉",
    "後期高齢者医療",
    "介護保険",
    "児童手当",
    "健康管理",
    "就学",
    "児童扶養手当",
    "生活保護",
    "子ども・子育て支援",
    "印鑑登録",
    "戸籍",
    "戸籍の附票",
)


def standard_catalogue() -> dict[str, frozenset[Segment]]:
    """Standardized system name -> segments it may run in."""
    return {name: frozenset({Segment.mynumber}) for name in STANDARD_SYSTEMS}
