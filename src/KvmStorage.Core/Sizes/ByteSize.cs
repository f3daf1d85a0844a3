using System.Globalization;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Sizes;

/// <summary>
/// Parses and formats sizes. Suffixes are binary, as in qemu-img and PowerShell's <c>8GB</c>:
/// K/KB/KiB = 1024, M = 1024², G, T, P, E; B or no suffix = bytes. A fraction of a unit is cut to whole bytes, as qemu-img does.
/// </summary>
public static class ByteSize
{
    private static readonly string[] Units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

    public static ulong Parse(string text)
    {
        if (!TryParse(text, out ulong value))
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                ErrorIds.InvalidSize,
                $"'{text}' is not a size. Use a byte count or a number with a binary suffix: 512M, 8G, 1.5T (K, M, G, T, P, E; KB/KiB forms work too).",
                text);
        }

        return value;
    }

    public static bool TryParse(string? text, out ulong value)
    {
        value = 0;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        string s = text.Trim();
        int end = s.Length;
        while (end > 0 && char.IsLetter(s[end - 1]))
        {
            end--;
        }

        string number = s[..end].Trim();
        string suffix = s[end..].ToUpperInvariant();
        int power = suffix switch
        {
            "" or "B" => 0,
            "K" or "KB" or "KIB" => 1,
            "M" or "MB" or "MIB" => 2,
            "G" or "GB" or "GIB" => 3,
            "T" or "TB" or "TIB" => 4,
            "P" or "PB" or "PIB" => 5,
            "E" or "EB" or "EIB" => 6,
            _ => -1,
        };
        if (power < 0 || number.Length == 0 || number.StartsWith('-') || number.StartsWith('+'))
        {
            return false;
        }

        if (!decimal.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal amount))
        {
            return false;
        }

        decimal bytes = amount;
        for (int i = 0; i < power; i++)
        {
            bytes *= 1024;
            if (bytes > ulong.MaxValue)
            {
                return false;
            }
        }

        // A fraction of a unit is cut to whole bytes, as qemu-img does ("2.2T" is 2418925581107 bytes, which image
        // creation then rounds up to whole 512-byte sectors); a fraction of a byte is no size at all.
        if (power == 0 && bytes != decimal.Truncate(bytes))
        {
            return false;
        }

        bytes = decimal.Truncate(bytes);

        value = (ulong)bytes;
        return true;
    }

    /// <summary>Formats a byte count for people: <c>8 GiB</c>, <c>1.5 MiB</c>, <c>512 B</c>.</summary>
    public static string Format(ulong bytes)
    {
        double value = bytes;
        int unit = 0;
        while (value >= 1024 && unit < Units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.##} {Units[unit]}");
    }
}
