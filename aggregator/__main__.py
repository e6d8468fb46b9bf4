from aggregator.service import Aggregator
from shared.service import run_service

if __name__ == "__main__":
    run_service(Aggregator)
