using System.Buffers;
using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Luks;

/// <summary>
/// The LUKS parts shared by a LUKS file and a LUKS-encrypted qcow2 image: unlocking the header that lies at a region
/// of the file, and reading payload sectors through the cipher.
/// </summary>
internal static class LuksRegion
{
    /// <summary>Parses the header at [<paramref name="offset"/>, +<paramref name="length"/>) of the file and unlocks it.</summary>
    public static (XtsAes Cipher, LuksHeader Header) Unlock(HostFile file, ulong offset, ulong length, bool checkPayload, ImagePassphrase? passphrase)
    {
        byte[] head = file.ReadMetadata(offset, LuksHeader.Length, "LUKS header");
        LuksHeader header = LuksHeader.Parse(head, length, checkPayload, file.Path);
        return (LuksKeys.Unlock(header, (at, buffer) => file.ReadMetadata(offset + at, buffer.Length, "LUKS key material").CopyTo(buffer), passphrase, file.Path), header);
    }

    /// <summary>
    /// Reads and decrypts guest bytes stored at <paramref name="host"/>; the sector of each 512 bytes' tweak is its
    /// host offset less <paramref name="bias"/>, over 512 (the guest sector for a LUKS file, the host sector for qcow2).
    /// </summary>
    public static void ReadDecrypted(HostFile file, XtsAes cipher, ulong host, ulong bias, Span<byte> destination)
    {
        ulong start = host & ~511UL;
        int before = (int)(host - start);
        int total = (before + destination.Length + 511) & ~511;
        if (before == 0 && total == destination.Length)
        {
            file.ReadData(host, destination);
            cipher.Decrypt(destination, (start - bias) / 512);
            return;
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            Span<byte> sectors = buffer.AsSpan(0, total);
            file.ReadData(start, sectors);
            cipher.Decrypt(sectors, (start - bias) / 512);
            sectors.Slice(before, destination.Length).CopyTo(destination);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }
    }
}

/// <summary>A LUKS file's payload: every sector is data (qemu's crypto driver reports no holes), read through the cipher.</summary>
internal sealed class LuksLayer(HostFile file, ulong size, ulong payload, XtsAes cipher) : ImageLayer(file, size)
{
    public override LayerRun Map(ulong offset, ulong maxLength) => new(maxLength, RunKind.Data, payload + offset);

    /// <summary>qemu's crypto driver has no block status: all data, at no offset.</summary>
    public override LayerStatus Status(ulong offset, ulong maxLength) => new(maxLength, Data: true);

    public override void ReadRun(ulong offset, in LayerRun run, Span<byte> destination) =>
        LuksRegion.ReadDecrypted(File, cipher, run.HostOffset, payload, destination);

    public override void Dispose()
    {
        cipher.Dispose();
        base.Dispose();
    }
}
