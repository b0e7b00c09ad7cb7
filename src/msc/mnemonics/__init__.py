"""msc.mnemonics"""
