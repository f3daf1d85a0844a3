using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Images.Luks;

/// <summary>One of a LUKS1 header's eight key slots (48 bytes, big-endian).</summary>
internal sealed class LuksKeySlot
{
    public const uint Enabled = 0x00AC71F3;
    public const uint Disabled = 0x0000DEAD;

    public bool Active { get; set; }

    public uint Iterations { get; set; }

    public byte[] Salt { get; set; } = new byte[LuksHeader.SaltLength];

    /// <summary>Where the slot's split key material starts, in 512-byte sectors from the start of the LUKS header.</summary>
    public uint KeyMaterialSector { get; set; }

    public uint Stripes { get; set; } = LuksHeader.Stripes;
}

/// <summary>
/// The LUKS1 partition header (592 bytes, big-endian; the LUKS1 on-disk format specification, and qemu's
/// crypto/block-luks.c for what qemu writes and accepts). Parse validates everything a crafted header could
/// lie about, so the key slots and the payload it names lie where the reader may go.
/// </summary>
internal sealed class LuksHeader
{
    public const int Length = 592;
    public const int SaltLength = 32;
    public const int DigestLength = 20;
    public const int SlotCount = 8;
    public const uint Stripes = 4000;

    /// <summary>qemu and cryptsetup start the first key material 4096 bytes in and align each slot's material to it.</summary>
    public const uint KeySlotAlignment = 4096;

    /// <summary>
    /// Above this, one PBKDF2 run takes minutes: qemu's own calibration at iter-time 2 s gives a few million. A crafted
    /// header must not make opening an image hang, so larger counts are refused as damage.
    /// </summary>
    public const uint MaxIterations = 50_000_000;

    private const int SlotsOffset = 208;
    private const int SlotLength = 48;
    private static readonly byte[] Magic = [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE];

    public string CipherName { get; init; } = "aes";

    public string CipherMode { get; init; } = "xts-plain64";

    public string HashSpec { get; init; } = "sha256";

    public uint PayloadSector { get; init; }

    public uint KeyBytes { get; init; }

    public byte[] MasterKeyDigest { get; init; } = new byte[DigestLength];

    public byte[] MasterKeyDigestSalt { get; init; } = new byte[SaltLength];

    public uint MasterKeyDigestIterations { get; init; }

    public string Uuid { get; init; } = string.Empty;

    public LuksKeySlot[] Slots { get; init; } = [.. Enumerable.Range(0, SlotCount).Select(_ => new LuksKeySlot())];

    /// <summary>Bytes of one slot's split key material: key length times stripes.</summary>
    public int SplitKeyBytes => checked((int)(KeyBytes * Stripes));

    /// <summary>The sectors one slot's material takes, aligned as qemu and cryptsetup lay slots out.</summary>
    public static uint SlotSectors(uint keyBytes)
    {
        uint sectors = ((keyBytes * Stripes) + 511) / 512;
        uint align = KeySlotAlignment / 512;
        return (sectors + align - 1) / align * align;
    }

    /// <summary>The start of slot <paramref name="slot"/>'s material, and the payload for <paramref name="slot"/> = 8, as qemu lays them out.</summary>
    public static uint LayoutSector(uint keyBytes, int slot) => (KeySlotAlignment / 512) + (SlotSectors(keyBytes) * (uint)slot);

    /// <summary>
    /// Parses and checks a header. <paramref name="regionLength"/> bounds the key material (the file, or the qcow2
    /// clusters that hold the header); <paramref name="checkPayload"/> also requires the payload offset to lie past the
    /// key material and inside the region, as for a LUKS file (qcow2 keeps its data elsewhere).
    /// </summary>
    public static LuksHeader Parse(ReadOnlySpan<byte> h, ulong regionLength, bool checkPayload, string path)
    {
        if (h.Length < Length || !h.StartsWith(Magic) || BinaryPrimitives.ReadUInt16BigEndian(h[6..]) != 1)
        {
            throw Damaged(path, "not a LUKS version 1 header.");
        }

        string cipherName = Field(h, 8, 32, path);
        string cipherMode = Field(h, 40, 32, path);
        string hashSpec = Field(h, 72, 32, path);
        var header = new LuksHeader
        {
            CipherName = cipherName,
            CipherMode = cipherMode,
            HashSpec = hashSpec,
            PayloadSector = BinaryPrimitives.ReadUInt32BigEndian(h[104..]),
            KeyBytes = BinaryPrimitives.ReadUInt32BigEndian(h[108..]),
            MasterKeyDigest = h.Slice(112, DigestLength).ToArray(),
            MasterKeyDigestSalt = h.Slice(132, SaltLength).ToArray(),
            MasterKeyDigestIterations = BinaryPrimitives.ReadUInt32BigEndian(h[164..]),
            Uuid = Field(h, 168, 40, path),
            Slots = new LuksKeySlot[SlotCount],
        };
        for (int i = 0; i < SlotCount; i++)
        {
            ReadOnlySpan<byte> s = h.Slice(SlotsOffset + (i * SlotLength), SlotLength);
            uint active = BinaryPrimitives.ReadUInt32BigEndian(s);
            if (active is not (LuksKeySlot.Enabled or LuksKeySlot.Disabled))
            {
                throw Damaged(path, $"key slot {i} has an invalid state 0x{active:x8}.");
            }

            header.Slots[i] = new LuksKeySlot
            {
                Active = active == LuksKeySlot.Enabled,
                Iterations = BinaryPrimitives.ReadUInt32BigEndian(s[4..]),
                Salt = s.Slice(8, SaltLength).ToArray(),
                KeyMaterialSector = BinaryPrimitives.ReadUInt32BigEndian(s[40..]),
                Stripes = BinaryPrimitives.ReadUInt32BigEndian(s[44..]),
            };
        }

        header.Validate(regionLength, checkPayload, path);
        return header;
    }

    /// <summary>The header's 592 bytes.</summary>
    public byte[] Serialize()
    {
        byte[] h = new byte[Length];
        Magic.CopyTo(h, 0);
        BinaryPrimitives.WriteUInt16BigEndian(h.AsSpan(6), 1);
        WriteField(h, 8, CipherName);
        WriteField(h, 40, CipherMode);
        WriteField(h, 72, HashSpec);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(104), PayloadSector);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(108), KeyBytes);
        MasterKeyDigest.CopyTo(h, 112);
        MasterKeyDigestSalt.CopyTo(h, 132);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(164), MasterKeyDigestIterations);
        WriteField(h, 168, Uuid);
        for (int i = 0; i < SlotCount; i++)
        {
            Span<byte> s = h.AsSpan(SlotsOffset + (i * SlotLength), SlotLength);
            LuksKeySlot slot = Slots[i];
            BinaryPrimitives.WriteUInt32BigEndian(s, slot.Active ? LuksKeySlot.Enabled : LuksKeySlot.Disabled);
            BinaryPrimitives.WriteUInt32BigEndian(s[4..], slot.Iterations);
            slot.Salt.CopyTo(s[8..]);
            BinaryPrimitives.WriteUInt32BigEndian(s[40..], slot.KeyMaterialSector);
            BinaryPrimitives.WriteUInt32BigEndian(s[44..], slot.Stripes);
        }

        return h;
    }

    /// <summary>The hash of hash-spec; the cipher is checked by <see cref="LuksKeys.CheckCipher"/>.</summary>
    public HashAlgorithmName Hash(string path) =>
        LuksHash.TryParse(HashSpec, out HashAlgorithmName hash)
            ? hash
            : throw new KvmStorageException(ErrorKind.NotSupported, LuksErrorIds.UnsupportedCipher, $"'{path}': the LUKS hash '{HashSpec}' is not supported; sha1, sha256, sha384 and sha512 are.", path);

    internal static KvmStorageException Damaged(string path, string message) =>
        new(ErrorKind.InvalidData, ForeignFormatErrorIds.LuksHeaderInvalid, $"'{path}': {message}", path);

    private void Validate(ulong regionLength, bool checkPayload, string path)
    {
        if (KeyBytes is 0 or > 512 || (KeyBytes * Stripes) % 512 != 0)
        {
            throw Damaged(path, $"the master key length {KeyBytes} is not valid.");
        }

        if (MasterKeyDigestIterations is 0 or > MaxIterations)
        {
            throw Damaged(path, $"the master key digest's iteration count {MasterKeyDigestIterations} is not valid.");
        }

        ulong headerSectors = (Length + 511) / 512;
        var ranges = new List<(ulong Start, ulong End, int Slot)>();
        for (int i = 0; i < SlotCount; i++)
        {
            LuksKeySlot slot = Slots[i];
            if (slot.Stripes != Stripes)
            {
                throw Damaged(path, $"key slot {i} has {slot.Stripes} stripes; LUKS1 uses {Stripes}.");
            }

            if (slot.Active && slot.Iterations is 0 or > MaxIterations)
            {
                throw Damaged(path, $"key slot {i}'s iteration count {slot.Iterations} is not valid.");
            }

            ulong start = slot.KeyMaterialSector;
            ulong end = start + (((ulong)KeyBytes * Stripes) + 511) / 512;
            if (start < headerSectors)
            {
                throw Damaged(path, $"key slot {i}'s material at sector {start} overlaps the header.");
            }

            if (slot.Active && end * 512 > regionLength)
            {
                throw Damaged(path, $"key slot {i}'s material (sectors {start} to {end}) lies beyond the end of the header area ({regionLength} bytes).");
            }

            if (checkPayload && end > PayloadSector)
            {
                throw Damaged(path, $"key slot {i}'s material (sectors {start} to {end}) overlaps the payload at sector {PayloadSector}.");
            }

            foreach ((ulong s, ulong e, int other) in ranges)
            {
                if (start < e && s < end)
                {
                    throw Damaged(path, $"the material of key slots {other} and {i} overlaps.");
                }
            }

            ranges.Add((start, end, i));
        }

        if (checkPayload && (ulong)PayloadSector * 512 > regionLength)
        {
            throw Damaged(path, $"the payload offset {(ulong)PayloadSector * 512} lies beyond the end of the file ({regionLength} bytes).");
        }
    }

    private static string Field(ReadOnlySpan<byte> h, int offset, int length, string path)
    {
        ReadOnlySpan<byte> field = h.Slice(offset, length);
        int end = field.IndexOf((byte)0);
        if (end < 0)
        {
            throw Damaged(path, "a LUKS header string is not NUL-terminated.");
        }

        foreach (byte b in field[..end])
        {
            if (b is < 0x20 or > 0x7e)
            {
                throw Damaged(path, "a LUKS header string holds a non-printable byte.");
            }
        }

        return Encoding.ASCII.GetString(field[..end]);
    }

    private static void WriteField(byte[] h, int offset, string value) => Encoding.ASCII.GetBytes(value, h.AsSpan(offset));
}

/// <summary>Error ids of encrypted images.</summary>
public static class LuksErrorIds
{
    /// <summary>The image is encrypted and no passphrase was given (InvalidArgument).</summary>
    public const string PassphraseRequired = "PassphraseRequired";

    /// <summary>No key slot opens with the passphrase (AuthenticationFailed).</summary>
    public const string WrongPassphrase = "WrongPassphrase";

    /// <summary>The header names a cipher, mode or hash this module does not implement (NotSupported).</summary>
    public const string UnsupportedCipher = "UnsupportedLuksCipher";

    /// <summary>The encryption options contradict each other or the format (InvalidArgument).</summary>
    public const string InvalidEncryptionOptions = "InvalidEncryptionOptions";

    /// <summary>The image uses qcow's legacy AES encryption, which qemu no longer opens and this module does not (NotSupported).</summary>
    public const string LegacyAesEncryption = "LegacyAesEncryption";
}
