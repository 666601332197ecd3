"""From camera video to a gallery of pedestrian crops: sample frames (`decode`), detect people
(`detect`), track them across frames (`track`), and write crops with one record each (`ingest`).
The file layout of a gallery is in docs/VIDEO.md."""
