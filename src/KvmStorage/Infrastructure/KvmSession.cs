using KvmStorage.Core.Hosting;

namespace KvmStorage.Infrastructure;

/// <summary>The connections opened in this PowerShell process and which one is the default.</summary>
internal static class KvmSession
{
    private static readonly object Gate = new();
    private static readonly List<KvmConnection> Open = [];
    private static KvmConnection? defaultConnection;

    public static KvmConnection? Default
    {
        get
        {
            lock (Gate)
            {
                return defaultConnection is { IsOpen: true } ? defaultConnection : null;
            }
        }
    }

    public static IReadOnlyList<KvmConnection> Connections
    {
        get
        {
            lock (Gate)
            {
                Open.RemoveAll(c => !c.IsOpen);
                return [.. Open];
            }
        }
    }

    public static void Add(KvmConnection connection, bool makeDefault)
    {
        lock (Gate)
        {
            Open.Add(connection);
            if (makeDefault)
            {
                defaultConnection = connection;
            }
        }
    }

    public static bool IsDefault(KvmConnection connection)
    {
        lock (Gate)
        {
            return ReferenceEquals(defaultConnection, connection);
        }
    }

    public static void Close(KvmConnection connection)
    {
        lock (Gate)
        {
            Open.Remove(connection);
            if (ReferenceEquals(defaultConnection, connection))
            {
                defaultConnection = Open.LastOrDefault(c => c.IsOpen);
            }
        }

        connection.Dispose();
    }
}
