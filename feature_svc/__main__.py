from feature_svc.service import FeatureService
from shared.service import run_service

if __name__ == "__main__":
    run_service(FeatureService)
