using KvmStorage.Core.Images.Luks;

namespace KvmStorage.Core.Images;

/// <summary>
/// Encrypt a new image with LUKS (qemu's <c>encrypt.format=luks</c> for qcow2, the luks format for raw): the
/// passphrase that opens its key slot, and how the slot is made. The caller keeps and disposes the passphrase.
/// </summary>
public sealed record ImageEncryption
{
    public required ImagePassphrase Passphrase { get; init; }

    public LuksCreateOptions Luks { get; init; } = new();
}
