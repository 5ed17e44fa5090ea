"""template.yaml as data: YAML with CloudFormation's short-form tags (!Ref,
!GetAtt, !If, ...) read into their long form ({"Ref": ...}, {"Fn::GetAtt":
[resource, attribute]}, ...)."""
import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


def load_template():
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
