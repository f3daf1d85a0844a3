using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Images.Luks;

/// <summary>How a new LUKS header is made (qemu's <c>encrypt.*</c> / luks create options).</summary>
public sealed record LuksCreateOptions
{
    /// <summary>Milliseconds PBKDF2 should take to open the key slot (qemu's iter-time, default 2000).</summary>
    public int IterationTime { get; init; } = 2000;

    /// <summary>Hash of PBKDF2 and the splitter: sha256 (default, as qemu), sha1, sha384 or sha512.</summary>
    public string HashSpec { get; init; } = "sha256";

    /// <summary>Master key bytes: 64 for aes-256-xts (default, as qemu), 32 for aes-128-xts.</summary>
    public int KeyBytes { get; init; } = 64;
}

/// <summary>Reads the LUKS header area at an offset from its start.</summary>
internal delegate void RegionReader(ulong offset, Span<byte> buffer);

/// <summary>
/// LUKS1 key management: unlocking a key slot with a passphrase, and creating a header with a fresh master key in
/// slot 0, laid out as qemu lays it out (material from 4 KiB, slots 4 KiB-aligned, the payload after slot 7).
/// </summary>
internal static class LuksKeys
{
    private static readonly ConcurrentDictionary<string, long> IterationsPerSecond = new();

    /// <summary>The cipher a header names, when this module implements it: AES in XTS mode with plain64 tweaks.</summary>
    public static void CheckCipher(LuksHeader header, string path)
    {
        if (header.CipherName != "aes" || header.CipherMode != "xts-plain64" || header.KeyBytes is not (32 or 48 or 64))
        {
            throw new KvmStorageException(
                ErrorKind.NotSupported,
                LuksErrorIds.UnsupportedCipher,
                $"'{path}': the LUKS cipher {header.CipherName}-{header.CipherMode} with a {header.KeyBytes * 4}-bit key is not supported; aes-xts-plain64 (qemu's default) is.",
                path);
        }

        _ = header.Hash(path);
    }

    /// <summary>
    /// Opens the first active key slot that <paramref name="passphrase"/> unlocks and returns the payload cipher.
    /// <paramref name="readRegion"/> reads the header area at an offset from its start.
    /// </summary>
    public static XtsAes Unlock(LuksHeader header, RegionReader readRegion, ImagePassphrase? passphrase, string path)
    {
        CheckCipher(header, path);
        if (passphrase is null)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, LuksErrorIds.PassphraseRequired, $"'{path}' is encrypted (LUKS); give its passphrase with -Passphrase.", path);
        }

        HashAlgorithmName hash = header.Hash(path);
        int keyBytes = (int)header.KeyBytes;
        byte[] material = GC.AllocateArray<byte>(header.SplitKeyBytes, pinned: true);
        byte[] slotKey = GC.AllocateArray<byte>(keyBytes, pinned: true);
        byte[] masterKey = GC.AllocateArray<byte>(keyBytes, pinned: true);
        Span<byte> digest = stackalloc byte[LuksHeader.DigestLength];
        try
        {
            foreach (LuksKeySlot slot in header.Slots.Where(s => s.Active))
            {
                Rfc2898DeriveBytes.Pbkdf2(passphrase.Bytes, slot.Salt, slotKey, (int)slot.Iterations, hash);
                readRegion((ulong)slot.KeyMaterialSector * 512, material);
                using (var slotCipher = new XtsAes(slotKey))
                {
                    slotCipher.Decrypt(material, 0);
                }

                AfSplitter.Merge(hash, material, (int)slot.Stripes, masterKey);
                Rfc2898DeriveBytes.Pbkdf2(masterKey, header.MasterKeyDigestSalt, digest, (int)header.MasterKeyDigestIterations, hash);
                if (CryptographicOperations.FixedTimeEquals(digest, header.MasterKeyDigest))
                {
                    return new XtsAes(masterKey);
                }
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(material);
            CryptographicOperations.ZeroMemory(slotKey);
            CryptographicOperations.ZeroMemory(masterKey);
        }

        throw new KvmStorageException(ErrorKind.PermissionDenied, LuksErrorIds.WrongPassphrase, $"'{path}': no key slot opens with the passphrase given.", path);
    }

    /// <summary>
    /// A new header with a random master key in slot 0, and its whole area (header, then every slot's material, up to
    /// the payload offset, which follows the last slot as qemu places it) as the bytes to store.
    /// </summary>
    public static (LuksHeader Header, byte[] Area, XtsAes Cipher) Create(LuksCreateOptions options, ImagePassphrase passphrase, string path)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (passphrase.IsEmpty)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, LuksErrorIds.InvalidEncryptionOptions, $"'{path}': the passphrase is empty.", path);
        }

        if (!LuksHash.TryParse(options.HashSpec, out HashAlgorithmName hash) || options.KeyBytes is not (32 or 64) || options.IterationTime is < 1 or > 600_000)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                LuksErrorIds.InvalidEncryptionOptions,
                $"'{path}': LUKS options not supported (hash {options.HashSpec}, {options.KeyBytes}-byte key, iteration time {options.IterationTime} ms).",
                path);
        }

        uint keyBytes = (uint)options.KeyBytes;
        long perSecond = IterationsPerSecond.GetOrAdd(options.HashSpec, _ => Calibrate(hash));

        // qemu: the slot takes iter-time, the digest an eighth of it (as cryptsetup); never fewer than 1000 either.
        long slotIterations = Math.Clamp(perSecond * options.IterationTime / 1000, 1000, LuksHeader.MaxIterations);
        long digestIterations = Math.Clamp(perSecond * options.IterationTime / 1000 / 8, 1000, LuksHeader.MaxIterations);

        byte[] masterKey = GC.AllocateArray<byte>((int)keyBytes, pinned: true);
        byte[] slotKey = GC.AllocateArray<byte>((int)keyBytes, pinned: true);
        byte[] split = GC.AllocateArray<byte>(checked((int)(keyBytes * LuksHeader.Stripes)), pinned: true);
        try
        {
            RandomNumberGenerator.Fill(masterKey);
            var header = new LuksHeader
            {
                CipherName = "aes",
                CipherMode = "xts-plain64",
                HashSpec = options.HashSpec,
                KeyBytes = keyBytes,
                PayloadSector = LuksHeader.LayoutSector(keyBytes, LuksHeader.SlotCount),
                MasterKeyDigestSalt = RandomNumberGenerator.GetBytes(LuksHeader.SaltLength),
                MasterKeyDigestIterations = (uint)digestIterations,
                Uuid = Guid.NewGuid().ToString("D"),
            };
            Rfc2898DeriveBytes.Pbkdf2(masterKey, header.MasterKeyDigestSalt, header.MasterKeyDigest, (int)digestIterations, hash);
            for (int i = 0; i < LuksHeader.SlotCount; i++)
            {
                header.Slots[i].KeyMaterialSector = LuksHeader.LayoutSector(keyBytes, i);
            }

            LuksKeySlot first = header.Slots[0];
            first.Active = true;
            first.Iterations = (uint)slotIterations;
            first.Salt = RandomNumberGenerator.GetBytes(LuksHeader.SaltLength);
            Rfc2898DeriveBytes.Pbkdf2(passphrase.Bytes, first.Salt, slotKey, (int)slotIterations, hash);
            AfSplitter.Split(hash, masterKey, (int)LuksHeader.Stripes, split);
            using (var slotCipher = new XtsAes(slotKey))
            {
                slotCipher.Encrypt(split, 0);
            }

            byte[] area = new byte[(ulong)header.PayloadSector * 512];
            header.Serialize().CopyTo(area, 0);
            split.CopyTo(area, (long)first.KeyMaterialSector * 512);
            return (header, area, new XtsAes(masterKey));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(masterKey);
            CryptographicOperations.ZeroMemory(slotKey);
            CryptographicOperations.ZeroMemory(split);
        }
    }

    /// <summary>
    /// PBKDF2 iterations per second on this machine, measured as qemu's <c>qcrypto_pbkdf2_count_iters</c> measures
    /// them: from 2^15 iterations, ten times more while a run takes under 100 ms, else scaled to about a second, until
    /// one run takes over half a second. Measured once per process and hash.
    /// </summary>
    private static long Calibrate(HashAlgorithmName hash)
    {
        Span<byte> key = stackalloc byte[64];
        Span<byte> salt = stackalloc byte[LuksHeader.SaltLength];
        Span<byte> output = stackalloc byte[64];
        RandomNumberGenerator.Fill(key);
        RandomNumberGenerator.Fill(salt);
        long iterations = 1 << 15;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            Rfc2898DeriveBytes.Pbkdf2(key, salt, output, (int)iterations, hash);
            double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            if (ms > 500 || iterations >= LuksHeader.MaxIterations)
            {
                return (long)(iterations * 1000.0 / Math.Max(ms, 1));
            }

            iterations = ms < 100 ? iterations * 10 : (long)(iterations * 1000.0 / ms);
            iterations = Math.Min(iterations, LuksHeader.MaxIterations);
        }
    }
}
