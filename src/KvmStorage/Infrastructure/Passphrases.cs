using System.Runtime.InteropServices;
using System.Security;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Luks;

namespace KvmStorage.Infrastructure;

/// <summary>
/// Passphrases as the cmdlets take them (SecureString, so they are never echoed, logged or bound from a plain string
/// by accident) turned into the core's <see cref="ImagePassphrase"/>: the characters pass through pinned buffers
/// wiped at once; no managed string ever holds them.
/// </summary>
internal static class Passphrases
{
    public static ImagePassphrase? From(SecureString? secure)
    {
        if (secure is null)
        {
            return null;
        }

        IntPtr buffer = Marshal.SecureStringToGlobalAllocUnicode(secure);
        char[] chars = GC.AllocateArray<char>(secure.Length, pinned: true);
        try
        {
            Marshal.Copy(buffer, chars, 0, chars.Length);
            return ImagePassphrase.FromChars(chars);
        }
        finally
        {
            Array.Clear(chars);
            Marshal.ZeroFreeGlobalAllocUnicode(buffer);
        }
    }

    /// <summary>
    /// What -Encrypt asks for: the output's passphrase is -NewPassphrase, else -Passphrase (the source's, when it has
    /// one). -NewPassphrase without -Encrypt is refused, as is -Encrypt without any passphrase.
    /// </summary>
    public static ImageEncryption? Encryption(bool encrypt, ImagePassphrase? passphrase, ImagePassphrase? newPassphrase, int iterationTime, object target)
    {
        if (!encrypt)
        {
            return newPassphrase is null
                ? null
                : throw new KvmStorageException(ErrorKind.InvalidArgument, LuksErrorIds.InvalidEncryptionOptions, "-NewPassphrase is the passphrase of an encrypted output: add -Encrypt.", target);
        }

        ImagePassphrase chosen = newPassphrase ?? passphrase
            ?? throw new KvmStorageException(ErrorKind.InvalidArgument, LuksErrorIds.PassphraseRequired, "-Encrypt needs the passphrase of the new image: give -Passphrase (or -NewPassphrase).", target);
        return new ImageEncryption { Passphrase = chosen, Luks = new LuksCreateOptions { IterationTime = iterationTime } };
    }
}
