"""The training jobs' role and outputs: exactly what a SageMaker training job for a brand LoRA needs, and the
stack outputs `catalog train run --on sagemaker` takes."""

from tests.infra.test_least_privilege import PUT_SET, grants_of

ASSET_REPOSITORY = "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/<container assets repository>"
TRAINING_LOGS = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/sagemaker/TrainingJobs*"
TRAINING_ROLE = {
    *{
        (f"ecr:{a}", ASSET_REPOSITORY)
        for a in ("BatchCheckLayerAvailability", "BatchGetImage", "GetDownloadUrlForLayer")
    },
    ("ecr:GetAuthorizationToken", "*"),
    # the `train` channel and the checkpoints a resumed job copies back
    ("s3:GetObject", "StorageBrands/brands/*/datasets/*"),
    ("s3:GetObject", "StorageBrands/brands/*/training/*"),
    ("s3:ListBucket", "StorageBrands (s3:prefix brands/*/datasets/*, brands/*/training/*)"),
    # model.tar.gz and checkpoints, under the run's training folder only
    *{(action, "StorageBrands/brands/*/training/*") for action in PUT_SET},
    *{
        (f"logs:{a}", TRAINING_LOGS)
        for a in ("CreateLogGroup", "CreateLogStream", "DescribeLogStreams", "PutLogEvents")
    },
    ("cloudwatch:PutMetricData", "* (cloudwatch:namespace /aws/sagemaker/TrainingJobs, AWS/SageMaker)"),
}


def test_the_training_role_is_assumed_by_sagemaker_and_gets_exactly_what_a_job_uses(synthesized):
    # Given the synthesized stack's training role
    _, role = synthesized.one_named("AWS::IAM::Role", "TrainingRole")
    [statement] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}

    # Then it reads datasets, writes its model and checkpoints, pulls the image, logs: nothing more
    found = grants_of(synthesized.template, "TrainingRole")
    assert sorted(found - TRAINING_ROLE) == [], "granted beyond what a training job uses"
    assert sorted(TRAINING_ROLE - found) == [], "missing grants"


def test_the_job_can_never_write_versions_or_promotions(synthesized):
    # Given every grant of the training role, Then none writes anywhere but the training folders
    writes = [r for a, r in grants_of(synthesized.template, "TrainingRole") if a.startswith("s3:Put")]
    assert writes and all(r.endswith("/brands/*/training/*") for r in writes)


def test_the_stack_outputs_what_catalog_train_run_takes(synthesized):
    outputs = synthesized.template["Outputs"]
    # Then the role ARN, the image URI and the brand store's bucket are outputs under stable names
    role_id, _ = synthesized.one_named("AWS::IAM::Role", "TrainingRole")
    brands_id, _ = synthesized.one_named("AWS::S3::Bucket", "StorageBrands")
    assert outputs["TrainingRoleArn"]["Value"] == {"Fn::GetAtt": [role_id, "Arn"]}
    image_uri = outputs["TrainingImageUri"]["Value"]["Fn::Sub"]
    assert ".dkr.ecr." in image_uri and "container-assets" in image_uri  # the GPU endpoint's image asset
    assert outputs["BrandStoreBucket"]["Value"] == {"Ref": brands_id}


def test_cdk_nag_is_clean_with_the_training_role(synthesized):
    assert synthesized.nag_error is None, synthesized.nag_error
