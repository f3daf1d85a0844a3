using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Pools;

/// <summary>Which pool names are acceptable: libvirt's rules plus what a file name <c>&lt;name&gt;.xml</c> needs.</summary>
public static class PoolNames
{
    /// <summary>255 bytes of file name, less ".xml".</summary>
    public const int MaxLength = 251;

    public static void Validate(string? name)
    {
        string? problem = Check(name);
        if (problem is not null)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidPoolName, $"'{Printable(name)}' is not a valid pool name: {problem}.", name);
        }
    }

    public static string? Check(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return "it is empty";
        }

        if (System.Text.Encoding.UTF8.GetByteCount(name) > MaxLength)
        {
            return $"it is longer than {MaxLength} bytes";
        }

        if (name.Contains('/', StringComparison.Ordinal))
        {
            return "it contains '/'";
        }

        if (name is "." or "..")
        {
            return "it is '.' or '..'";
        }

        if (name.Any(char.IsControl))
        {
            return "it contains a control character (NUL, newline, tab, …)";
        }

        if (name.StartsWith('.'))
        {
            return "it starts with '.' (a hidden file libvirt would skip)";
        }

        if (name.StartsWith('-'))
        {
            return "it starts with '-'";
        }

        return name.Trim().Length != name.Length ? "it starts or ends with white space" : null;
    }

    /// <summary>A name as it can be shown in a message: control characters escaped.</summary>
    public static string Printable(string? name) =>
        name is null ? "(null)" : string.Concat(name.Select(c => char.IsControl(c) ? $"\\x{(int)c:x2}" : c.ToString()));
}
