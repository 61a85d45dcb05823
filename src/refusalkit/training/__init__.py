"""Safety training beyond refusal tokens: DeRTa (decoupled refusal training), vanilla safety SFT, and the
past-tense defence's data. Training itself runs through the one LoRA/Trainer path of
:func:`refusalkit.tokens.train.fit_lora`."""
