"""`make demo`: the whole loop on one machine, no Azure subscription.

A dataset that ships with scikit-learn lands in batches; a first model trains and goes to
production; new data lands and the new model walks staging, approval and a canary
(10 -> 25 -> 50 -> 100) to production, driven by a traffic generator that sends labeled
requests and their feedback; then a corrupted batch (flipped labels) lands, fools the offline
evaluation (its own holdout is corrupted too), and is caught by the canary and rolled back.

Everything is real: Azurite, the Functions app under devhost, the local pipeline runner
(scikit-learn + MLflow), the local endpoint, MLflow. Timings come from the demo policy in
devhost/demo/policies/. At the end: a report with each promotion's timeline.

    python -m devhost.demo [--output demo-output] [--no-mlflow-ui]

- `story`: the chapters, what the demo does and waits for, and the live view;
- `inputs`: the dataset, the batches that land, the labeled traffic to the endpoint;
- `report`: the timeline picture and the HTML report written at the end;
- `main`: the entry point.
"""
