"""Every family's published full-size config and its tiny demo config, for the benches (one table, many benches).

FULL: family -> (config, network_G.variant where the config alone is ambiguous, else None); TINY: family -> the
confs/<family>/demo_tiny.yml with the same structure at a small size.
"""
FULL = {
    "llflow": ("confs/LLFlow/LOL-pc.yml", "llflow"),
    "gltg": ("confs/GLTG-AFlow/LOLv2-pc.yml", "gltg"),
    "zmar": ("confs/ZMAR-SNFlow/LOLv2-pc.yml", "zmar"),
    "upt": ("confs/UPT-Flow/UPT-Flow.yml", "upt"),
    "drbn": ("confs/DRBN/DRBN_stage1.yml", None),
}
FLOWS = {name: FULL[name] for name in ("llflow", "gltg", "zmar", "upt")}
TINY = {
    "llflow": "confs/LLFlow/demo_tiny.yml", "gltg": "confs/GLTG-AFlow/demo_tiny.yml",
    "zmar": "confs/ZMAR-SNFlow/demo_tiny.yml", "upt": "confs/UPT-Flow/demo_tiny.yml", "drbn": "confs/DRBN/demo_tiny.yml",
}
