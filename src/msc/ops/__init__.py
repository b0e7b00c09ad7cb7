"""msc.ops"""
