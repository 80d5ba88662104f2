"""The viewable images: Secondary Captures built from analysed images, their layout, the findings capture and which captures a study gets."""
