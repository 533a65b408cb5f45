#!/usr/bin/env python3
"""`cdk synth` / `cdk deploy` entry point: one stack, cdk-nag AwsSolutions checks on (findings fail the synth)."""

from catalog_infra.app import build_app

build_app().synth()
