"""Organ vocabularies of the datasets ipnp knows."""

AMOS_ORGANS: dict[int, str] = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "pancreas",
    11: "right adrenal gland",
    12: "left adrenal gland",
    13: "duodenum",
    14: "bladder",
    15: "prostate/uterus",
}

OPENKBP_ORGANS: dict[int, str] = {
    1: "Brainstem",
    2: "SpinalCord",
    3: "RightParotid",
    4: "LeftParotid",
    5: "Esophagus",
    6: "Larynx",
    7: "Mandible",
}
