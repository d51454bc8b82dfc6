"""Synthetic twins of the three case studies, each with a known ground-truth relatedness (docs/design.md#modules).

- :mod:`.faces`: SynthFaces, procedurally rendered faces whose expression shows only through 17 AUs (case study
  i; docs/method.md#synthetic-twins), and the compound-expression test set of the zero-shot study
  (docs/method.md#zero-shot-and-few-shot);
- :mod:`.regimes`: :func:`face_study` (also named :func:`affect_study`, as on real data), the multi-source
  annotation regimes of P0 / P1 on SynthFaces;
- :mod:`.objects`: identity + attributes (case study ii) and species + attributes ("beyond faces", P2).
Every builder returns a :class:`Study`.
"""
from .faces import (
    AU_EFFECTS, AU_REGIONS, CIRCUMPLEX, VA_AU_WEIGHTS, FaceConfig, au_probabilities, bayes_ceiling, check_table,
    compound_test_set, make_faces, region_mask, render_faces, sample_labels, sample_nuisance, write_faces,
)
from .objects import (
    HAIR_COLOURS, IDENTITY_ATTRIBUTES, SPECIES_ATTRIBUTES, SPECIES_GROUPS, identity_study, species_study,
)
from .regimes import AFFECTNET_COUNTS, AU_SETS, PRESETS, REGIMES, SourceSpec, affect_study, face_study, source_specs
from ..study import Study

__all__ = [
    "AFFECTNET_COUNTS", "AU_EFFECTS", "AU_REGIONS", "AU_SETS", "CIRCUMPLEX", "HAIR_COLOURS", "IDENTITY_ATTRIBUTES",
    "PRESETS", "REGIMES", "SPECIES_ATTRIBUTES", "SPECIES_GROUPS", "VA_AU_WEIGHTS", "FaceConfig", "SourceSpec",
    "Study", "affect_study", "au_probabilities", "bayes_ceiling", "check_table", "compound_test_set", "face_study",
    "identity_study", "make_faces", "region_mask", "render_faces", "sample_labels", "sample_nuisance",
    "source_specs", "species_study", "write_faces",
]
