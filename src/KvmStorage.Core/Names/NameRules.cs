using System.Globalization;
using System.Text;

namespace KvmStorage.Core.Names;

/// <summary>
/// The rule every name the module writes shares (pool, volume, snapshot and VM names): it must be stored exactly as
/// given and be visible as it is. Each kind adds its own rules (length, '/', '.') and its own error id on top.
/// </summary>
public static class NameRules
{
    /// <summary>NAME_MAX of Linux file systems (ext4, xfs, btrfs, tmpfs): a file name's length in UTF-8 bytes.</summary>
    public const int MaxFileNameBytes = 255;

    /// <summary>Why <paramref name="name"/> breaks the shared rule, or null when it does not.</summary>
    public static string? Check(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return "it is empty";
        }

        for (int i = 0; i < name.Length; i++)
        {
            if (char.IsSurrogatePair(name, i))
            {
                if (IsHidden(char.ConvertToUtf32(name, i)))
                {
                    return $"it contains the invisible format character {CodePoint(char.ConvertToUtf32(name, i))}";
                }

                i++;
                continue;
            }

            char c = name[i];
            if (char.IsSurrogate(c))
            {
                // UTF-8 has no form for half a pair: the file would be created as U+FFFD, a different name.
                return $"it contains the unpaired surrogate {CodePoint(c)}, which would be stored as a different name";
            }

            if (IsHidden(c))
            {
                return char.GetUnicodeCategory(c) switch
                {
                    UnicodeCategory.Format => $"it contains the invisible format character {CodePoint(c)} (a bidirectional control, zero-width character or similar)",
                    UnicodeCategory.Control => $"it contains the control character {CodePoint(c)}",
                    _ => $"it contains the line or paragraph separator {CodePoint(c)}",
                };
            }
        }

        if (string.IsNullOrWhiteSpace(name))
        {
            return "it is only white space";
        }

        // The checks above leave only names of whole Unicode scalars, which always round-trip; this is the rule itself.
        return Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(name)) == name ? null : "it would be stored as a different name";
    }

    /// <summary>The length of <paramref name="name"/> as a file name: UTF-8 bytes.</summary>
    public static int ByteCount(string name) => Encoding.UTF8.GetByteCount(name);

    /// <summary>A name as it can be shown in a message: controls, invisible and unpaired characters written as &lt;U+XXXX&gt;.</summary>
    public static string Printable(string? name)
    {
        if (name is null)
        {
            return "(null)";
        }

        var text = new StringBuilder(name.Length);
        for (int i = 0; i < name.Length; i++)
        {
            if (char.IsSurrogatePair(name, i))
            {
                int scalar = char.ConvertToUtf32(name, i);
                text.Append(IsHidden(scalar) ? $"<{CodePoint(scalar)}>" : name.Substring(i, 2));
                i++;
            }
            else if (char.IsSurrogate(name[i]) || IsHidden(name[i]))
            {
                text.Append('<').Append(CodePoint(name[i])).Append('>');
            }
            else
            {
                text.Append(name[i]);
            }
        }

        return text.ToString();
    }

    /// <summary>A character as Unicode writes it: U+202E.</summary>
    public static string CodePoint(int scalar) => string.Create(CultureInfo.InvariantCulture, $"U+{scalar:X4}");

    // Control characters, format characters (bidi overrides, zero-width joiners) and the line and paragraph
    // separators: each can make a name look like another one, or break the line a listing prints it on.
    private static bool IsHidden(int scalar) => CharUnicodeInfo.GetUnicodeCategory(scalar) is
        UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;
}
