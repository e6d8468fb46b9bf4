from inference_svc.worker import InferenceWorker
from shared.service import run_service

if __name__ == "__main__":
    run_service(InferenceWorker)
